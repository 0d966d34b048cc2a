"""`python -m robex.lrp_study`: see :mod:`robex.stages.lrp_study`."""

from robex.stages.lrp_study import main

if __name__ == "__main__":
    main()
