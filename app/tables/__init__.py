"""Pipeline tables: what each Succeeded run of a pipeline adds to its layers' tables."""
