from services.payout.bootstrap import create_app
from services.payout.config import PayoutSettings
from shared.run import serve

settings = PayoutSettings()
serve(create_app(settings), settings)
