"""The domain: job states, stages, params and errors. Imports nothing from the rest of Strata."""
