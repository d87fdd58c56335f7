"""Settings shared by every profile, read from the environment or `.env`.

A wrong value stops start-up with ImproperlyConfigured naming the variable.
A profile gives its own inputs first (`inputs.INPUTS`): everything is
derived once, from them and the environment.

One module per topic, each saying what every setting is for where it is
defined, imported here in the order they are derived: a later topic imports
what it derives from an earlier one (the wait for an image from Kentik's
retries, the fetch task's timeout from Kentik's and the database's limits).
"""

# In the order the settings are derived, not alphabetical.
# isort: off
from .inputs import *  # noqa: F403
from .web import *  # noqa: F403
from .storage import *  # noqa: F403
from .database import *  # noqa: F403
from .kentik import *  # noqa: F403
from .cache import *  # noqa: F403
from .charts import *  # noqa: F403
from .workers import *  # noqa: F403
from .ops import *  # noqa: F403
# isort: on
