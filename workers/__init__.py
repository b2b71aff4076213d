"""Worker entry points and the task-queue map."""
