"""componentize-py looks up the exported resource ``generator`` of the
interface ``planner`` as ``Generator`` in a module named ``planner``: this
one hands it the class ``sparkhost.export_workload`` made for the workload
in ``app.py``. Nothing to edit here."""

import app  # noqa: F401  (runs export_workload)
import sparkhost

Generator = sparkhost.exported_generator()
