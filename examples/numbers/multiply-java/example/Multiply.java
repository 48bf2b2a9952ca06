package example;

import io.hkube.rs.Algorithm;
import io.hkube.rs.Api;
import java.util.List;
import java.util.Map;

/** One batch item times k. */
public class Multiply implements Algorithm {
    @Override
    public Object start(Map<String, Object> args, Api api) {
        List<?> input = (List<?>) args.get("input");
        long item = ((Number) input.get(0)).longValue();
        long k = ((Number) input.get(1)).longValue();
        return item * k;
    }
}
