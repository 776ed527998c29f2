"""The programs people run beside the pipeline: the command line, the HTTP service, the unattended
service (Prefect deployments and the landing watcher), tuning, and install-time helpers. Apps import
flows and the library; the only stage they reach is the one `textclf stage NAME` runs, by name."""
