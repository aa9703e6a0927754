from project.search.command import main

main()
