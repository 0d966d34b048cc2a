"""`python -m robex.verify`: see :mod:`robex.stages.verify`."""

from robex.stages.verify import main

if __name__ == "__main__":
    main()
