"""The layer that meets git and DVC: revisions, releases, `persyn plan` and `persyn doctor`."""
