"""Object storage for sealed WAL data (arrives with the s3stream issue)."""
