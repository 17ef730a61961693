"""Health telemetry: device reports, the embedded ingest, and the sources gates read."""
