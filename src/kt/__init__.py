"""Knowledge Tracing pipeline: EdNet ETL, DKT training, mastery serving, on AWS or one laptop.

Importing ``kt`` imports nothing heavy: the serving bundle in ``model.tar.gz``
carries a few of these modules, and the Glue job imports the pure-Python ones.
"""

__version__ = "0.1.0"
