"""Distillation training shared by techniques: `training.loop.recover` fine-tunes a student against a
teacher; `training.settings` holds the params, importable without torch."""
