"""The differential oracle of explore's reduced search (issue 24, item 7).

:mod:`oracle.programs` makes small racer programs over a schema with views, triggers,
cascading foreign keys, unique constraints, a writable CTE, a function and marker files;
:mod:`oracle.runner` runs each program under the reduced search and under a full enumeration
of its interleavings, on a real database, and compares what each reached.
"""
