"""Files (numpy and stdlib): the reconstruction file, exporters, atomic writes, finding the input photos."""
