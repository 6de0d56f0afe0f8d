"""The ground floor: errors, schemas and atomic I/O, the artifact layout, model specs, devices and core
claims, chat templates, statistics — nothing here imports another persyn floor."""
