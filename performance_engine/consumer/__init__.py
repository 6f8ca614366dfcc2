"""The streaming side: the Faust app, Redis state and publishing.

The only package that imports Faust. The worker arrives with the streaming issue; until
then this package holds nothing, so that nothing imports Faust by accident.
"""

__all__: list[str] = []
