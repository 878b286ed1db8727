"""Per-step checkpoints of running jobs: where each is stored and its sha256, so that another attempt of
the job resumes after the last step saved, and only from a file that is exactly what was stored."""
