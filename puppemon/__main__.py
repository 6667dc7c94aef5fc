from puppemon.cli import main

main()
