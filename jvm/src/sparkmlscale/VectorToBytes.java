package sparkmlscale;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import org.apache.spark.ml.linalg.Vector;
import org.apache.spark.sql.api.java.UDF1;

/**
 * A Spark ML vector as the bytes of its dense values: {@code size * 8} bytes, little-endian
 * IEEE 754 float64 (a sparse vector is densified); null stays null.
 *
 * <p>sparkml_scale registers it as the SQL function {@code sparkml_scale_vector_to_bytes} and
 * reads vector columns through it: Spark's Arrow writer then copies one binary value per row
 * instead of writing a {@code list<double>} element by element (vector_to_array), which halves
 * the JVM-to-Python transfer of dense vectors.  Python reads the bytes back as one
 * zero-copy {@code (rows, size)} float64 array (sparkml_scale.core.arrow.bytes_to_dense).
 */
public final class VectorToBytes implements UDF1<Vector, byte[]> {
  private static final long serialVersionUID = 1L;

  @Override
  public byte[] call(Vector v) {
    if (v == null) {
      return null;
    }
    double[] values = v.toArray();
    ByteBuffer out = ByteBuffer.allocate(values.length * 8).order(ByteOrder.LITTLE_ENDIAN);
    out.asDoubleBuffer().put(values);
    return out.array();
  }
}
