from pdftasks.cli import main

main()
