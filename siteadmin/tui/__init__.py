"""The interactive console: Textual views over the core services, nothing else."""
