"""Batch scoring (`textclf score`): a registered version over a whole table, streamed, resumable, here or on Spark."""
