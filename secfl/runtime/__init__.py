"""Who runs where: the in-process simulator and its optional process pool for client work."""
