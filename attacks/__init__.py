"""Attack plug-ins for privfed."""
