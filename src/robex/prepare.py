"""`python -m robex.prepare`: see :mod:`robex.stages.prepare`."""

from robex.stages.prepare import main

if __name__ == "__main__":
    main()
