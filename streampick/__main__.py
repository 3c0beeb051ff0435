if __name__ == "__main__":
    import sys

    from streampick.cli import main
    sys.exit(main())
