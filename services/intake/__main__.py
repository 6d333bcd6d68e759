from services.intake.bootstrap import create_app
from services.intake.config import IntakeSettings
from shared.run import serve

settings = IntakeSettings()
serve(create_app(settings), settings)
