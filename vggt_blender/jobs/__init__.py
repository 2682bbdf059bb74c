"""The job layer: the worker process (engine side) and the clients that start, follow, cancel and fetch a job."""
