"""Per-step checkpoints: after each recipe step the engine saves the model state, so that another attempt
of the same job (after a worker was killed, say) resumes after the last step saved instead of from the
start. The engine writes and reads checkpoint folders; the worker stores them, keyed by job, step and
the checkpoint key, and checks their sha256 against the database before an attempt may use one."""
