"""The science demos behind `crema demo ...`: hep (the HEP calorimeter-image classifier) and
climate (semi-supervised extreme-weather detection). Each module has main(argv) -> int."""
import os


def cache_dir(name):
    """Where a demo keeps its generated data: $CREMA_CACHE/<name>, else
    $XDG_CACHE_HOME/crema/<name>, else ~/.cache/crema/<name>."""
    base = os.environ.get("CREMA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "crema")
    return os.path.join(base, name)
