"""`python -m robex.report`: see :mod:`robex.stages.report`."""

from robex.stages.report import main

if __name__ == "__main__":
    main()
