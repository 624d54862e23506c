"""The executor: the BatchManager's server. Runs one stage of one job per task."""
