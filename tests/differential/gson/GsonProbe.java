// Runs Gson's JsonParser.parseString — ThingsBoard's device-payload parser — on each input and prints
// one JSON line {"input", "parsed"} or {"input", "error"}. Input: a file of JSON string literals, one
// per line. Used by tests/differential/record_gson.py to record expected/gson_lenient.json.
import com.google.gson.Gson;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

public class GsonProbe {
    public static void main(String[] args) throws Exception {
        Gson gson = new Gson();
        for (String line : Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8)) {
            if (line.isEmpty()) continue;
            String input = JsonParser.parseString(line).getAsString();
            JsonObject out = new JsonObject();
            out.addProperty("input", input);
            try {
                JsonElement parsed = JsonParser.parseString(input);
                out.addProperty("parsed", parsed.toString());
            } catch (Exception e) {
                out.addProperty("error", e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            System.out.println(gson.toJson(out));
        }
    }
}
