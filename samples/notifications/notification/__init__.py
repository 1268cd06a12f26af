import datetime
import json
import random

import azure.functions as func


def main(myTimer: func.TimerRequest, actions: func.Out[str]) -> None:
    now = datetime.datetime.now().strftime("%A %d-%b-%Y %H:%M:%S")
    temperature = 22 + 2 * (random.random() - 0.5)
    humidity = 44 + 4 * (random.random() - 0.5)
    text = f"[ DateTime: {now} ] Temperature: {temperature:.3f} \u00b0C, Humidity: {humidity:.3f} %"
    actions.set(json.dumps({"actionName": "sendToAll", "data": text, "dataType": "text"}))
