"""Reports and notices: offline HTML, pinned web assets, notifications, redaction."""
