"""`python -m tbspark`: the same CLI as the `tbspark` script (used to start the platform detached)."""

from tbspark.cli import main

if __name__ == "__main__":
    main()
