"""What the Linux kernel knows about processes: ``/proc``, process groups, descendants.

The bottom floor: imports nothing of the package.
"""
