"""The application the command-line and deployment pages run (``myapp.jobs:app``)."""
