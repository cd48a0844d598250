"""Tasks as data: a YAML validated into TaskConfig, loaded through datasets' builders; what varies by task
type lives on its kind (peftbench/tasks/kinds/)."""
