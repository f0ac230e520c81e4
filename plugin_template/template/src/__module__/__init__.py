"""${description}"""
