"""Data intake: readers of every source, streamed batches, accepted batches of new data, the demo
generators, the landing folder."""
