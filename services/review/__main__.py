from services.review.bootstrap import create_app
from services.review.config import ReviewSettings
from shared.run import serve

settings = ReviewSettings()
serve(create_app(settings), settings)
