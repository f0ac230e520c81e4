"""The skeleton a plugin author renders into a new plugin package (``botloom new-plugin``)."""
