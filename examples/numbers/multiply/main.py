def start(args, api):
    item, k = args["input"]
    return item * k
