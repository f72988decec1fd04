"""burst-controller: the application layer (loop, state, status, CLI). ``__version__`` is the installed
package's version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("burst-controller")
except PackageNotFoundError:  # a checkout run without installing it
    __version__ = "0+unknown"
