"""Engine APIs: FastAPI app, the daemon supervisor and the API client CLI."""
