"""Example agents, each run as ``python -m agentmesh.examples.<module>``.

The demo's deterministic text agents turn a document into a published brief: ``splitter``
cuts it into sections, several ``analyst`` instances analyse sections in parallel, and
``writer`` summarises the analyses and publishes the brief (with ``text.unpublish`` to undo
it). Agents that do real work offline: ``llm`` (any OpenAI-compatible endpoint), ``data``
(CSV statistics and queries), ``code_runner`` (Python in :mod:`~agentmesh.examples.sandbox`)
and ``maths`` (SymPy); ``fake_llm`` is a local model for tests and ``agentmesh dev``.
"""

from agentmesh.examples.document import sample_document

__all__ = ["sample_document"]
