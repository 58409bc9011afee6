"""``from autotest.client import utils``: the same helpers as :mod:`autotest.client.shared.utils`."""

from autotest.client.shared.utils import *  # noqa: F403
from autotest.client.shared.utils import __all__ as __all__
