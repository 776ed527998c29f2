"""The programs people run beside the pipeline: the command line, the HTTP service, landing, watcher."""
