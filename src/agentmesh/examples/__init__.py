"""Deterministic, offline demo agents that turn a document into a published brief.

``splitter`` cuts a document into sections, several ``analyst`` instances analyse
sections in parallel, and ``writer`` summarises the analyses and publishes the
brief (with ``text.unpublish`` to undo it). Each runs as
``python -m agentmesh.examples.<name>``.
"""

from agentmesh.examples.document import sample_document

__all__ = ["sample_document"]
