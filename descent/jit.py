"""numba's on-disk cache, keyed by the source's content rather than its path.

numba caches a compiled function beside its source (`__pycache__`) or, with NUMBA_CACHE_DIR,
in a folder named after the source's directory, so a copy of the project at another path
compiles everything again: DVC runs every `exp run --temp` and queued experiment in a fresh
copy under .dvc/tmp/exps/, and the kernel compiled again in every train stage there.

`njit_cached` is `numba.njit(cache=True, ...)` with one difference: the cache lives in one
folder per module *and content of its source file*, under NUMBA_CACHE_DIR when set, else under
the user's cache directory ($XDG_CACHE_HOME/descent/numba, ~/.cache/descent/numba by
default). Any copy of the same source loads the same compiled code; an edited source gets a
new folder, so it can never load code compiled from the old one. numba's own checks still
apply inside the folder (numba version, Python version, signature, CPU, the function's
bytecode). Like numba's own cache, it does not see other modules' jitted functions that a
function calls: keep a module's jitted functions calling only their own module's.

    from descent.jit import njit_cached

    @njit_cached(nogil=True)
    def f(x): ...
"""
from __future__ import annotations

import functools
import hashlib
import os

import numba
from numba.core import caching, config
from numba.misc.appdirs import AppDirs

__all__ = ["cache_root", "njit_cached"]


def cache_root() -> str:
    """NUMBA_CACHE_DIR if the user set one (a test, another CPU's cache), else the user's
    cache directory: shared by every copy of the project, outside any of them (a `--temp`
    copy sees only tracked files, and is deleted after the run)."""
    if config.CACHE_DIR:
        return config.CACHE_DIR
    return os.path.join(AppDirs(appname="descent", appauthor=False).user_cache_dir, "numba")


@functools.lru_cache(maxsize=None)
def _content_hash(path: str, mtime_ns: int, size: int) -> str:
    # mtime and size in the key only to re-read a file edited while this process runs
    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


class ContentCacheLocator(caching._CacheLocator):
    """<cache_root>/<module>-<sha256 of the source file, 16 hex digits>/ for every
    function of that module."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        stamp = self.get_source_stamp()
        self._cache_path = os.path.join(cache_root(), f"{py_func.__module__}-{stamp[:16]}")

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        # The content, whatever the numba version (older ones stamp mtime and size): the
        # index then also refuses entries of another content, should two ever share a folder.
        st = os.stat(self._py_file)
        return _content_hash(self._py_file, st.st_mtime_ns, st.st_size)

    def get_disambiguator(self):
        return str(self._lineno)  # as numba's own locators: functions of one module

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.isfile(py_file):
            return None  # no source file (interactive): let numba's locators decide
        try:
            self = cls(py_func, py_file)
            self.ensure_cache_path()
        except OSError:
            return None  # unwritable cache root: numba's usual places (e.g. __pycache__)
        return self


class _ContentCacheImpl(caching.CompileResultCacheImpl):
    # Ours first; numba's as the fallback. NUMBA_CACHE_LOCATOR_CLASSES still overrides both.
    _locator_classes = [ContentCacheLocator, *caching.CompileResultCacheImpl._locator_classes]


class _ContentFunctionCache(caching.FunctionCache):
    _impl_class = _ContentCacheImpl


def njit_cached(function=None, **options):
    """`numba.njit(cache=True, **options)`, cached by content (see the module's docstring).
    Use as `@njit_cached` or `@njit_cached(nogil=True)`."""
    if function is None:
        return functools.partial(njit_cached, **options)
    if options.pop("cache", True) is False:
        raise ValueError("njit_cached always caches; use numba.njit for no cache")
    dispatcher = numba.njit(**options)(function)
    if config.DISABLE_JIT:  # NUMBA_DISABLE_JIT: njit gave back the plain function
        return dispatcher
    # What Dispatcher.enable_caching does, with our cache class (numba has no public hook
    # for a dispatcher's cache class); only this module's functions are affected.
    dispatcher._cache = _ContentFunctionCache(function)
    return dispatcher
