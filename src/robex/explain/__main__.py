"""`python -m robex.explain`: see :mod:`robex.stages.explain`."""

from robex.stages.explain import main

if __name__ == "__main__":
    main()
