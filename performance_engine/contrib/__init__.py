"""Integrations with frameworks a learning platform is built on (``contrib.django``)."""
