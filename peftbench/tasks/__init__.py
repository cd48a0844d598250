"""Tasks as data: a YAML validated into TaskConfig, loaded through datasets' builders."""
